"""`python -m sqlml.dbt`: the folder to put in a dbt project's packages.yml (`local:`)."""

from sqlml.dbt import PACKAGE_DIR

print(PACKAGE_DIR)
