import sys

from account_worker.main import main

sys.exit(main())
