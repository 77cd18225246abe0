// The resources of one CoreMachine environment. No secret anywhere: every service is reached with the
// user-assigned managed identity below, which holds only the roles the app needs.
param environmentName string
param location string
param tags object
param principalId string
param principalName string
param principalType string
param postgresSkuName string
param postgresSkuTier string
param maximumInstanceCount int
@secure()
param apiKey string
@secure()
param adminKey string

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var functionAppName = 'func-coremachine-${token}'
var deploymentContainerName = 'app-package-${token}'
var reportsContainerName = 'reports'
var databaseName = 'coremachine'

// Queue properties the app settings mirror (COREMACHINE_MAX_DELIVERIES, COREMACHINE_DUPLICATE_WINDOW_SECONDS,
// COREMACHINE_LOCK_SECONDS): see docs/azure.md, "Lock duration, lock renewal, function timeout and the task lease".
var maxDeliveryCount = 10
var duplicateWindow = 'PT1H'
var duplicateWindowSeconds = 3600
var jobsLockDuration = 'PT1M'
var tasksLockDuration = 'PT5M'
var tasksLockSeconds = 300

// Concurrency per instance (docs/azure.md, "Concurrency"): host.json maxConcurrentCalls (4) applies to each of the
// two Service Bus functions, so 8 messages at once; two more threads for HTTP and the janitor timer; one pooled
// connection per thread, so no invocation waits for a connection.
var threadCount = 10
var poolMaxSize = 10

// Built-in role definitions (ids are the same in every tenant).
var roles = {
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-coremachine-${token}'
  location: location
  tags: tags
}

// Monitoring: Application Insights on a Log Analytics workspace.

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-coremachine-${token}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-coremachine-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // The host sends with the identity; the app's OpenTelemetry exporter uses the connection string, so local
    // auth stays on until it passes a credential.
    DisableLocalAuth: false
  }
}

// Storage: the host's own storage (AzureWebJobsStorage), Flex Consumption's deployment container, and the
// ingest reports. Shared keys are off: identity only.

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no virtual network here, and Flex Consumption reaches the account over its public endpoint; shared keys are off, so only Entra principals with a role get in
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public endpoint, identity-only access (allowSharedKeyAccess false, no anonymous blob access)
  // checkov:skip=CKV_AZURE_206: locally redundant on purpose: the account holds host locks, a re-deployable package and reports that a rerun re-creates
  // checkov:skip=CKV_AZURE_43: the name is 'stcm' + uniqueString() (13 lowercase letters and digits), 17 characters: valid, but checkov cannot evaluate the expression
  name: 'stcm${token}'
  location: location
  tags: tags
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource reportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: reportsContainerName
  properties: { publicAccess: 'None' }
}

// Service Bus: Standard (Basic has no duplicate detection), local (SAS) auth off; the two queues the triggers
// bind to, with duplicate detection on (it can only be set when a queue is created).

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-coremachine-${token}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource jobsQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: 'jobs'
  properties: {
    lockDuration: jobsLockDuration
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateWindow
    deadLetteringOnMessageExpiration: true
    requiresSession: false
    maxSizeInMegabytes: 5120
  }
}

resource tasksQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: 'tasks'
  properties: {
    lockDuration: tasksLockDuration
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateWindow
    deadLetteringOnMessageExpiration: true
    requiresSession: false
    maxSizeInMegabytes: 5120
  }
}

// PostgreSQL Flexible Server: Entra ID authentication only (no password exists), PgBouncer on (port 6432).
// The app's identity is an Entra admin because it owns the schema (it runs the migrations).

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: 'psql-coremachine-${token}'
  location: location
  tags: tags
  sku: {
    name: postgresSkuName
    tier: postgresSkuTier
  }
  properties: {
    version: '16'
    storage: {
      storageSizeGB: 32
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: { mode: 'Disabled' }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// The server takes one configuration change at a time: each step below waits for the one before.
resource pgbouncer 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: postgres
  name: 'pgbouncer.enabled'
  properties: {
    value: 'true'
    source: 'user-override'
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: postgres
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
  dependsOn: [pgbouncer]
}

// Flex Consumption apps have no fixed outbound addresses: allow connections from Azure; every login still needs
// an Entra ID token of a principal that is a role on the server, over TLS.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: postgres
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [database]
}

resource appAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: postgres
  name: identity.properties.principalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: identity.name
    tenantId: tenant().tenantId
  }
  dependsOn: [allowAzure]
}

resource personAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(principalId)) {
  parent: postgres
  name: empty(principalId) ? 'none' : principalId
  properties: {
    principalType: principalType
    principalName: principalName
    tenantId: tenant().tenantId
  }
  dependsOn: [appAdmin]
}

// Least-privilege role assignments of the app's identity.

resource sbSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roles.serviceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sbReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roles.serviceBusDataReceiver)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob Data Owner on the account: the host keeps its locks and keys in blobs, Flex Consumption reads the package
// from the deployment container, and the app writes reports (all three are blob containers of this account).
resource storageBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource personReportsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(reportsContainer.id, principalId, roles.storageBlobDataReader)
  scope: reportsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: principalId
    principalType: principalType
  }
}

// The HTTP API's own keys (the app checks them; the host-level function is anonymous): set only when given,
// since an unset key closes its routes.
var apiKeySetting = empty(apiKey) ? [] : [{ name: 'COREMACHINE_API_KEY', value: apiKey }]
var adminKeySetting = empty(adminKey) ? [] : [{ name: 'COREMACHINE_ADMIN_KEY', value: adminKey }]

// The Function App: Flex Consumption, Python 3.12, the identity for everything.

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption scales per event across instances the platform places; zone redundancy is a cost choice left to production (zoneRedundant on the plan)
  name: 'plan-coremachine-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the HTTP API is public by design; every route but the probes needs the API or admin key, which the app checks
  // checkov:skip=CKV_AZURE_17: clients authenticate with the API's keys over TLS, not client certificates
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; a fixed instance floor (always-ready) is a cost choice, not needed for correctness (messages wait in Service Bus)
  // checkov:skip=CKV_AZURE_213: the platform's health check does not apply to Flex Consumption; /api/readyz is the readiness probe for external monitors
  name: functionAppName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(apiKeySetting, adminKeySetting, [
        // Host storage through the identity (no connection string).
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        // Telemetry: Entra ID authenticated ingestion.
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        // Service Bus: the triggers (host) and the app's SDK client both read these.
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
        { name: 'ServiceBusConnection__clientId', value: identity.properties.clientId }
        { name: 'JOBS_QUEUE', value: jobsQueue.name }
        { name: 'TASKS_QUEUE', value: tasksQueue.name }
        // azure-identity's DefaultAzureCredential picks the user-assigned identity by this.
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        // PostgreSQL through PgBouncer (6432), logging in as the identity with an Entra ID token.
        { name: 'DATABASE_URL', value: 'postgresql://${identity.name}@${postgres.properties.fullyQualifiedDomainName}:6432/${databaseName}?sslmode=require' }
        { name: 'COREMACHINE_DATABASE_AUTH', value: 'entra' }
        { name: 'COREMACHINE_TRANSPORT', value: 'servicebus' }
        { name: 'COREMACHINE_MAX_DELIVERIES', value: string(maxDeliveryCount) }
        { name: 'COREMACHINE_DUPLICATE_WINDOW_SECONDS', value: string(duplicateWindowSeconds) }
        { name: 'COREMACHINE_LOCK_SECONDS', value: string(tasksLockSeconds) }
        { name: 'COREMACHINE_POOL_MAX_SIZE', value: string(poolMaxSize) }
        { name: 'PYTHON_THREADPOOL_THREAD_COUNT', value: string(threadCount) }
        { name: 'JANITOR_SCHEDULE', value: '0 */1 * * * *' }
        // Ingest reports to Blob Storage.
        { name: 'COREMACHINE_ARTIFACTS_ACCOUNT_URL', value: storage.properties.primaryEndpoints.blob }
        { name: 'COREMACHINE_ARTIFACTS_CONTAINER', value: reportsContainer.name }
      ])
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.12'
      }
    }
  }
  dependsOn: [storageBlobOwner, sbSender, sbReceiver, telemetryPublisher, appAdmin]
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityName string = identity.name
output identityClientId string = identity.properties.clientId
output serviceBusNamespace string = '${serviceBus.name}.servicebus.windows.net'
output postgresHost string = postgres.properties.fullyQualifiedDomainName
output postgresDatabase string = databaseName
output storageBlobEndpoint string = storage.properties.primaryEndpoints.blob
output applicationInsightsName string = appInsights.name
