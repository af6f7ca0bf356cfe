import { reliabilityTable } from './calibration-stats';
import { applyTemperature, chooseTemperature, DEFAULT_TEMPERATURE_GRID, temperatureNll } from './temperature';

describe('temperature scaling', () => {
  const layout = { numClasses: 2 };

  it('rescales a head as softmax(log p / T) and never changes the predicted class', () => {
    // p = (0.8, 0.2): log-odds log 4; at T = 2 the log-odds halve: (2/3, 1/3).
    const out = applyTemperature(Float32Array.from([0.8, 0.2, 0.5, 0.5]), layout, { stage1: 2 });
    expect(out[0]).toBeCloseTo(2 / 3, 6);
    expect(out[1]).toBeCloseTo(1 / 3, 6);
    expect([out[2], out[3]]).toEqual([0.5, 0.5]);
    // Two-stage rows: each block by its own temperature, the blocks stay distributions.
    const two = applyTemperature(Float32Array.from([0.9, 0.1, 0.6, 0.3, 0.1]), { numClasses: 2, subtypeParents: [0, 1, 1] }, { stage1: 1, subtype: 0.5 });
    expect(Array.from(two.subarray(0, 2))).toEqual([Math.fround(0.9), Math.fround(0.1)]);
    // T = 0.5 squares: 0.36, 0.09, 0.01 normalized.
    expect(two[2]).toBeCloseTo(0.36 / 0.46, 6);
    expect(two[4]).toBeCloseTo(0.01 / 0.46, 6);
    expect(() => applyTemperature(Float32Array.from([0.5, 0.5]), layout, { stage1: 0 })).toThrow(/temperature must be in/);
  });

  it('finds the temperature of a hand-made over-confident model, and adds the sites\' sums', () => {
    // Confidence 0.9 but right 3 times of 4: the NLL is smallest where the confidence becomes 0.75,
    // i.e. log-odds log 3 = log 9 / T -> T = 2.
    const rows = Float32Array.from([0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.1, 0.9]);
    const labels = [0, 0, 0, 0];
    const grid = [0.5, 1, 1.5, 2, 2.5, 3];
    const whole = temperatureNll(rows, labels, layout, 'stage1', grid);
    expect(whole.count).toBe(4);
    expect(whole.nll[1]).toBeCloseTo(-3 * Math.log(0.9) - Math.log(0.1), 5);
    expect(chooseTemperature([whole])).toEqual(expect.objectContaining({ temperature: 2, count: 4 }));
    // Split over two "sites": the same choice from their sums.
    const a = temperatureNll(rows.subarray(0, 4), labels.slice(0, 2), layout, 'stage1', grid);
    const b = temperatureNll(rows.subarray(4), labels.slice(2), layout, 'stage1', grid);
    const split = chooseTemperature([a, b]);
    expect(split?.temperature).toBe(2);
    expect(split?.meanNll).toBeCloseTo(whole.nll[3] / 4, 6);
    expect(split?.meanNllAtOne).toBeCloseTo(whole.nll[1] / 4, 6);
    expect(chooseTemperature([])).toBeNull();
    expect(() => chooseTemperature([a, { ...b, grid: [1] }])).toThrow(/another grid/);
    expect(() => temperatureNll(rows, [0, 0, 0, 2], layout, 'stage1', grid)).toThrow(/label 2 of row 3/);
  });

  it('uses a default grid from 0.25 to 8 that contains 1', () => {
    expect(DEFAULT_TEMPERATURE_GRID[0]).toBeCloseTo(0.25, 6);
    expect(DEFAULT_TEMPERATURE_GRID.at(-1)).toBeCloseTo(8, 6);
    expect(DEFAULT_TEMPERATURE_GRID).toContain(1);
  });

  it('tabulates reliability by confidence bin', () => {
    const table = reliabilityTable([0.95, 0.05, 0.9, 0.1, 0.35, 0.65], [0, 1, 1], 2, 10);
    expect(table).toHaveLength(10);
    expect(table[9]).toEqual({ lower: 0.9, upper: 1, count: 1, confidence: expect.closeTo(0.95, 6), accuracy: 1 });
    expect(table[8]).toEqual({ lower: expect.closeTo(0.8, 9), upper: 0.9, count: 1, confidence: expect.closeTo(0.9, 6), accuracy: 0 });
    expect(table[6]).toEqual(expect.objectContaining({ count: 1, accuracy: 1 }));
    expect(table[0]).toEqual(expect.objectContaining({ count: 0, confidence: null, accuracy: null }));
  });
});
