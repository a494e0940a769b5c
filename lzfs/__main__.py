import sys

from lzfs.cli.main import main

sys.exit(main())
