from backupctl.cli.main import main

main()
