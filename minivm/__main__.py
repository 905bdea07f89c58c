"""``python -m minivm``."""

from minivm.cli import main

main()
