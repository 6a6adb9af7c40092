"""What requests and answers look like on the wire, shared by ``scoring/``, ``server/`` and ``transports/``.

- :mod:`.v2`: the V2 Open Inference Protocol's infer message (JSON tensors, the binary extension);
- :mod:`.json_codec`: ``/score`` JSON bodies in and results out;
- :mod:`.errors`: a scoring failure as a status and a message.

These modules import only :mod:`edge_module.runtime`, numpy and orjson: nothing above them.
"""
