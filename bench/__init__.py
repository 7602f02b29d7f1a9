"""tinyfw benchmark suite (see README.md here and docs/BENCH.md)."""
