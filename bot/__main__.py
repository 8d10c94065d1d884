from bot.ops.cli import main
import sys
sys.exit(main())
