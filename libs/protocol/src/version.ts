/** Wire protocol version. A site speaking another version is refused at hello with both versions named. */
export const PROTOCOL_VERSION = 1;

/** Default socket.io message limit. Weights travel as raw binary (4 bytes/parameter), so a
 * 30 M-parameter model needs ~120 MB; both ends must agree on the limit. */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** socket.io namespace that sites connect to. */
export const SITE_NAMESPACE = '/sites';
