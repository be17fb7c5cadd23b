"""Container images of the local cluster's real node, built without a registry or a daemon.

``oci.py`` turns a handful of files into an OCI image archive that ``ctr images import``
names by itself; ``build.sh`` builds the pause image (``pause.c``) and, once
``tests/pipeline/build.sh`` exists, the engine pipeline's images into ``<bin dir>/images``,
where the launcher imports every ``*.oci.tar`` into the node's containerd.
"""
