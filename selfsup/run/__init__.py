"""The run layer: what turns a composed config into a finished, resumable run (docs/ARCHITECTURE.md)."""
