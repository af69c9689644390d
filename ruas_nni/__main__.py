import sys

from ruas_nni.cli import main

sys.exit(main())
