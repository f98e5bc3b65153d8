"""``python -m service``: run the HTTP service."""

from service.app import main

if __name__ == "__main__":
    raise SystemExit(main())
