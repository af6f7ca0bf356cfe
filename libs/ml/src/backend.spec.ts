import * as tf from '@tensorflow/tfjs-core';
import { ValidationError } from '@histofed/fl-core';
import { BackendUnavailableError, currentBackend, parseBackendChoice, selectBackend } from './backend';

describe('parseBackendChoice', () => {
  it('accepts the five choices, case-insensitively', () => {
    expect(parseBackendChoice('auto')).toBe('auto');
    expect(parseBackendChoice(' WASM ')).toBe('wasm');
    expect(parseBackendChoice('tensorflow-gpu')).toBe('tensorflow-gpu');
  });

  it('rejects anything else, naming the allowed values', () => {
    expect(() => parseBackendChoice('webgl')).toThrow(ValidationError);
    expect(() => parseBackendChoice('webgl')).toThrow('auto, tensorflow-gpu, tensorflow, wasm, cpu');
  });
});

describe('selectBackend', () => {
  it('fails for an explicit tensorflow when @tensorflow/tfjs-node is not installed, saying how to install it', async () => {
    const p = selectBackend('tensorflow');
    await expect(p).rejects.toBeInstanceOf(BackendUnavailableError);
    await expect(p).rejects.toThrow(/@tensorflow\/tfjs-node is not installed.*npm install @tensorflow\/tfjs-node /);
    await expect(p).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', backend: 'tensorflow' });
  });

  it('fails for an explicit tensorflow-gpu, naming the package and CUDA', async () => {
    await expect(selectBackend('tensorflow-gpu')).rejects.toThrow(/npm install @tensorflow\/tfjs-node-gpu.*CUDA/);
  });

  it('loads cpu without the "Hi, looks like you are running TensorFlow.js in Node.js" banner', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      const b = await selectBackend('cpu');
      expect(b).toMatchObject({ name: 'cpu', package: '@tensorflow/tfjs-backend-cpu', tfBackend: 'cpu' });
      expect(tf.getBackend()).toBe('cpu');
      tf.tensor1d([1, 2, 3]).dispose();
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });

  it('loads wasm', async () => {
    const b = await selectBackend('wasm');
    expect(b).toMatchObject({ name: 'wasm', package: '@tensorflow/tfjs-backend-wasm', tfBackend: 'wasm' });
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
  });

  it('auto picks wasm here, reporting the native packages it skipped; calling it twice is fine', async () => {
    await selectBackend('cpu');
    const a = await selectBackend('auto');
    expect(a.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(a.skipped.map((s) => s.package)).toEqual(['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']);
    expect(await selectBackend()).toEqual(a);
    expect(currentBackend()).toEqual(a);
  });

  it('runs concurrent calls one after the other; the last one wins', async () => {
    const [a, b] = await Promise.all([selectBackend('cpu'), selectBackend('wasm')]);
    expect([a.name, b.name]).toEqual(['cpu', 'wasm']);
    expect(tf.getBackend()).toBe('wasm');
  });

  it('with auto, skips only packages that are missing: a broken native install is reported', async () => {
    const broken = (id: string) => {
      if (id === '@tensorflow/tfjs-node-gpu') {
        throw Object.assign(new Error('Cannot find module @tensorflow/tfjs-node-gpu'), { code: 'MODULE_NOT_FOUND' });
      }
      if (id === '@tensorflow/tfjs-node') {
        throw Object.assign(new Error('libtensorflow.so.2: cannot open shared object file'), { code: 'ERR_DLOPEN_FAILED' });
      }
      throw new Error(`unexpected ${id}`);
    };
    await expect(selectBackend('auto', { requireModule: broken })).rejects.toThrow(
      /@tensorflow\/tfjs-node is installed but failed to load: libtensorflow\.so\.2/,
    );
    // still on the previous backend
    expect(tf.getBackend()).toBe('wasm');
  });

  it('reports a package that loads but registers no backend visible to this tfjs-core', async () => {
    await expect(selectBackend('tensorflow', { requireModule: () => ({}) })).rejects.toThrow(
      /registered no 'tensorflow' backend/,
    );
  });
});
