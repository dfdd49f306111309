"""Use cases: plain values in, plain values out, one unit of work each. No protobuf, no gRPC."""
