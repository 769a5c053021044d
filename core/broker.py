"""The embedded default's Celery broker: kombu's filesystem transport, with each message written
whole before it shows in the queue folder.

kombu writes a message file in place (create, then write), and a worker polling the folder may
take the file in between: it reads it empty and stops with a JSONDecodeError (seen in CI, on a
busy machine). Here the message is written under a name no queue reads, then renamed into place,
which is atomic within one folder.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# Added to a message's name while it is written: the transport reads only names ending
# ".<queue>.msg".
_WRITING = ".writing"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + _WRITING, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(path + _WRITING, path)
        except OSError as error:
            raise ChannelError(f"Cannot add file {path!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel
