"""PostgreSQL adapters: the state store, the queue, migrations, named SQL and the connection pool."""
