// CoreMachine on Azure: everything the app needs, in one resource group, deployed by `azd up`
// (or `az deployment sub create --template-file infra/main.bicep ...`, see docs/azure.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment (azd env); it names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the person deploying (azd sets it): made a PostgreSQL Entra admin and given read access to the reports, so they can look at the data. Empty for none.')
param principalId string = ''

@description('Role name of that principal in PostgreSQL (for a person, their user principal name, e.g. you@contoso.com); empty means the object id.')
param principalName string = ''

@description('Type of principalId: User for a person, ServicePrincipal for a CI identity.')
@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('PostgreSQL compute. PgBouncer needs General Purpose or Memory Optimized; Burstable has no PgBouncer.')
param postgresSkuName string = 'Standard_D2ds_v5'

@allowed(['GeneralPurpose', 'MemoryOptimized'])
param postgresSkuTier string = 'GeneralPurpose'

@description('Most Function App instances Flex Consumption scales out to; each holds up to COREMACHINE_POOL_MAX_SIZE connections.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 20

@secure()
@description('Key of the job routes of the HTTP API (x-functions-key header); the app checks it itself. Empty closes those routes.')
param apiKey string = ''

@secure()
@description('Key of the admin routes (dead letters, cancel/retry from the dashboard). Empty closes them.')
param adminKey string = ''

var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'coremachine-resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    principalId: principalId
    principalName: empty(principalName) ? principalId : principalName
    principalType: principalType
    postgresSkuName: postgresSkuName
    postgresSkuTier: postgresSkuTier
    maximumInstanceCount: maximumInstanceCount
    apiKey: apiKey
    adminKey: adminKey
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_APP_URL string = resources.outputs.functionAppUrl
output AZURE_MANAGED_IDENTITY_NAME string = resources.outputs.identityName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output SERVICEBUS_NAMESPACE string = resources.outputs.serviceBusNamespace
output POSTGRES_HOST string = resources.outputs.postgresHost
output POSTGRES_DATABASE string = resources.outputs.postgresDatabase
output STORAGE_BLOB_ENDPOINT string = resources.outputs.storageBlobEndpoint
output APPLICATIONINSIGHTS_NAME string = resources.outputs.applicationInsightsName
