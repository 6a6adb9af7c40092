"""The scoring module that ships inside every edgepack image.

It imports nothing else of edgepack and keeps light dependencies (numpy, onnxruntime,
paho-mqtt, azure-iot-device) because it runs on arm boards too.
"""
