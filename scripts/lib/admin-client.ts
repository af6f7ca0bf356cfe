/**
 * fetch, sent again once when the kept-alive connection it went out on turned out closed by the
 * server (its idle timeout raced the request: undici's "other side closed" / a reset before any
 * response), which a slow step between two requests of a test makes likely. Any other failure,
 * and any response, is the caller's.
 */
async function fetchOnce(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    const code = ((e as { cause?: { code?: string } }).cause ?? {}).code;
    if (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET') throw e;
    return fetch(url, init);
  }
}

/** Minimal typed client of the coordinator's admin REST API (used by the demo and the tests). */
export class AdminClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetchOnce(`${this.baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async bytes(path: string): Promise<Uint8Array> {
    const res = await fetchOnce(`${this.baseUrl}${path}`, { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  /** Polls a run until it is completed or failed; resolves with the run as the API returns it. */
  waitForRun<T extends { status: string } = { status: string; statusReason: string | null; completedRounds: number; currentModelHash: string | null }>(
    runId: string,
    timeoutMs: number,
    intervalMs = 500,
  ): Promise<T> {
    return this.poll(
      async () => {
        const r = await this.request<T>('GET', `/api/runs/${runId}`);
        return r.status === 'completed' || r.status === 'failed' ? r : undefined;
      },
      timeoutMs,
      `run ${runId} to finish`,
      intervalMs,
    );
  }

  /** Polls until `check` returns a value (not undefined) or the timeout passes. */
  async poll<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string, intervalMs = 500): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await check().catch(() => undefined);
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}
