"""fedlearn: federated learning experiments as Hydra configs.

One Flower app (``fedlearn.app``) runs on three runtimes: in-process
(``fedlearn.runtime.inprocess``), Flower's Ray simulation engine
(``fedlearn.runtime.ray``) and fedlearn's own gRPC deployment
(``fedlearn.runtime.grpc``).
"""

__version__ = "0.1.0"
