pytest_plugins = ["localkube.fixtures"]
