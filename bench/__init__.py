"""tinyfw benchmark suite (see README.md here and design/BENCH.md)."""
