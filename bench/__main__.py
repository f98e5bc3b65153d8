"""``python -m bench``: run the benchmark and print its JSON report."""

from bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
