import sys

from comfygate.cli import main

sys.exit(main())
