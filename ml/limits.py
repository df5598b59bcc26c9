"""Input limits shared by the models and the schemas that document them."""

MAX_TOP_K = 20  # image classes returned per image
MAX_LIMIT = 100  # recommendations returned per request
MAX_USER_ID_CHARS = 64
