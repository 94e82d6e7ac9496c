"""Flower glue: the ClientApp and ServerApp that every runtime runs."""
