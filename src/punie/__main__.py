from punie.cli.entry import main

main()
