"""mplus: the Messaging Plus add-message API as a gRPC service with a JSON gateway."""
