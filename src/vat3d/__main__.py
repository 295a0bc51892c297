from vat3d.cli import main

main()
