"""gRPC transport: server factory, servicer, translation and the error table."""
