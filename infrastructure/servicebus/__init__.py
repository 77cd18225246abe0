"""Azure Service Bus adapters: the transport, message mapping and dead-letter browsing."""
