from msp_platform.cli import main

main()
