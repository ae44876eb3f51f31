"""ZIP record layouts (PKWARE APPNOTE) shared by the ZIP writer and the ZIP byte source.

Pure data: struct layouts, signatures, limits and the field values the format uses.
"""

from __future__ import annotations

import struct

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
END_RECORD = struct.Struct("<IHHHHIIH")
ZIP64_END_RECORD = struct.Struct("<IQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<IIQI")

LOCAL_SIGNATURE = 0x04034B50
CENTRAL_SIGNATURE = 0x02014B50
END_SIGNATURE = b"PK\x05\x06"
ZIP64_END_SIGNATURE = 0x06064B50
ZIP64_LOCATOR_SIGNATURE = 0x07064B50
DESCRIPTOR_SIGNATURE = 0x08074B50

MAX16 = 0xFFFF
MAX32 = 0xFFFFFFFF
ZIP64_EXTRA_ID = 0x0001
# APPNOTE 4.6.11 "Data Stream Alignment": pads a local header so member data starts aligned.
ALIGNMENT_EXTRA_ID = 0xA11E

STORED, DEFLATED, DEFLATED64, AES = 0, 8, 9, 99
FLAG_ENCRYPTED = 0x0001
FLAG_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800
