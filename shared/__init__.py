"""keysteward's core library: domain logic and the adapters over the Azure SDKs.

Never imports ``azure.functions``: the same core serves the Functions app and the CLI.
"""
