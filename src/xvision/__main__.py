import sys

from xvision.cli.main import main

sys.exit(main())
