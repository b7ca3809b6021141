from backupctl.cli.fastpath import main

main()
