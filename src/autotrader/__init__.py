"""AutoTrader MLOps: the domain library behind the DVC stages, the model server and the GitOps tooling.

Import direction inside the package is one way:
sources → validation, features → store → modeling → registry → serving, gitops.
"""

__version__ = "0.1.0"
