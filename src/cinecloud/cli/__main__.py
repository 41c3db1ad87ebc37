from cinecloud.cli.main import main

main()
