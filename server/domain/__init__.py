"""Plain values and rules: no protobuf, no gRPC, no SQL."""
