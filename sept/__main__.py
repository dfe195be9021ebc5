from sept.cli import main

main()
