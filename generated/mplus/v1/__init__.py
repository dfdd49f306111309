"""Code generated from proto/mplus by scripts/generate.sh. Do not edit."""
