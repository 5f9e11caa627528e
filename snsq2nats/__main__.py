from snsq2nats.cli import main

main()
