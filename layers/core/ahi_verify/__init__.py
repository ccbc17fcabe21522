"""Independent verification of AWS HealthImaging pixel data.

The flow, one module a step:

``metadata``      GetImageSetMetadata document -> the frames to check, with their stored checksums
``codestream``    what an HTJ2K/JPEG 2000 frame says about itself (size, precision, truncation)
``ifrc``          frame bytes -> image frame resolution checksum (the native codec layer)
``frame_check``   one frame's bytes + its metadata -> MATCH / MISMATCH / ERROR with a reason
``image_set``     every frame of an image set, fetched and checked concurrently within a memory budget
``healthimaging`` the one adapter to the AWS service (boto3)
``cli``           ``ahi-verify``

Nothing here but ``healthimaging`` and ``cli`` touches AWS; the rest is testable offline.
"""

__version__ = "0.1.0"
