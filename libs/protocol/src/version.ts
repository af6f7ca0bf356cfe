/** Wire protocol version. A site speaking another version is refused at hello with both versions named. */
export const PROTOCOL_VERSION = 2;

/** Default largest model or update (bytes) the coordinator transfers; weights travel in chunks. */
export const DEFAULT_MAX_MODEL_BYTES = 1024 * 1024 * 1024;

/** socket.io namespace that sites connect to. */
export const SITE_NAMESPACE = '/sites';
