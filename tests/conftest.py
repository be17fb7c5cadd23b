pytest_plugins = ["localkube.fixtures", "sluice_fixtures", "argocd.fixtures"]
