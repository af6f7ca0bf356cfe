import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { checkPngHeader } from './png-header';

describe('checkPngHeader', () => {
  let tmp: string;
  let png: Buffer;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-png-'));
    png = await sharp({ create: { width: 7, height: 5, channels: 3, background: '#c08' } }).png().toBuffer();
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const check = async (name: string, bytes: Buffer | string) => {
    const file = path.join(tmp, name);
    await writeFile(file, bytes);
    return checkPngHeader(file);
  };

  it('accepts a valid PNG and reports its size', async () => {
    expect(await check('ok.png', png)).toEqual({ ok: true, width: 7, height: 5 });
  });

  it('rejects bad signature, missing IHDR, corrupt IHDR, truncation, tiny and missing files', async () => {
    const noIhdr = Buffer.from(png);
    noIhdr.write('IDAT', 12, 'latin1');
    const badCrc = Buffer.from(png);
    badCrc[17] ^= 0xff; // width byte changed, CRC no longer matches
    const jpegLike = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), png.subarray(4)]);
    expect(await check('sig.png', jpegLike)).toEqual({ ok: false, reason: 'not a PNG (bad signature)' });
    expect(await check('ihdr.png', noIhdr)).toEqual({ ok: false, reason: 'PNG has no IHDR chunk first' });
    expect(await check('crc.png', badCrc)).toEqual({ ok: false, reason: 'PNG IHDR chunk is corrupt (bad CRC)' });
    expect(await check('cut.png', png.subarray(0, png.length - 5))).toEqual({ ok: false, reason: 'PNG is truncated (no IEND chunk at the end)' });
    expect(await check('tiny.png', png.subarray(0, 20))).toMatchObject({ ok: false, reason: expect.stringMatching(/too small/) });
    expect(await checkPngHeader(path.join(tmp, 'missing.png'))).toMatchObject({ ok: false, reason: expect.stringMatching(/cannot read file/) });
  });
});
