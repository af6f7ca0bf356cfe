/**
 * Re-applies a functional model's layers to new symbolic inputs, up to one layer: the way HistoFed
 * cuts a backbone (input -> cut layer), prepends input scaling, splits it into a frozen part and a
 * trainable part (fine-tuning), and joins the feature model and the heads into one saved model.
 * Re-applied layers share their weights with the original model; nothing is copied.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';

type SymbolicTensor = tfl.SymbolicTensor;

/** Layers whose output we must rebuild: `until` and every layer it depends on that is not given. */
function needed(model: tfl.LayersModel, given: ReadonlySet<string>, until: string): Set<string> {
  const byName = new Map(model.layers.map((l) => [l.name, l]));
  const out = new Set<string>();
  const stack = [until];
  while (stack.length > 0) {
    const name = stack.pop() as string;
    if (out.has(name) || given.has(name)) continue;
    const layer = byName.get(name);
    if (layer === undefined) throw new ValidationError(`layer "${name}" is not in model ${model.name}`);
    if (layer.getClassName() === 'InputLayer') {
      throw new ValidationError(`layer "${until}" of model ${model.name} needs input "${name}", which was not given`);
    }
    out.add(name);
    const node = layer.inboundNodes[0];
    for (const l of node.inboundLayers) stack.push(l.name);
  }
  return out;
}

/**
 * The output of `model`'s layer `until` computed from `inputs` (layer name -> the tensor that stands
 * for that layer's output). Every layer on the way must depend only on given tensors; each is applied
 * once (in the model's topological order), sharing its weights. `replace` may substitute a layer
 * (e.g. a frozen batch normalisation for a batch normalisation).
 */
export function rewire(
  model: tfl.LayersModel,
  inputs: ReadonlyMap<string, SymbolicTensor>,
  until: string,
  replace?: (layer: tfl.layers.Layer) => tfl.layers.Layer,
): SymbolicTensor {
  const todo = needed(model, new Set(inputs.keys()), until);
  const out = new Map(inputs);
  for (const layer of model.layers) {
    if (!todo.has(layer.name)) continue;
    const node = layer.inboundNodes[0];
    const args = node.inboundLayers.map((l, i) => {
      const t = out.get(l.name);
      if (t === undefined || node.tensorIndices[i] !== 0) {
        throw new ValidationError(`layer "${layer.name}" of model ${model.name}: input "${l.name}" is not available`);
      }
      return t;
    });
    const applied = (replace?.(layer) ?? layer).apply(args.length === 1 ? args[0] : args) as SymbolicTensor | SymbolicTensor[];
    if (Array.isArray(applied)) throw new ValidationError(`layer "${layer.name}" has several outputs; it cannot be part of a backbone cut`);
    out.set(layer.name, applied);
  }
  const result = out.get(until);
  if (result === undefined) throw new ValidationError(`layer "${until}" could not be computed from the given inputs`);
  return result;
}

/** The single input layer of a functional model. */
export function inputLayerName(model: tfl.LayersModel): string {
  const inputs = model.layers.filter((l) => l.getClassName() === 'InputLayer');
  if (inputs.length !== 1) throw new ValidationError(`model ${model.name}: expected one input layer, found ${inputs.length}`);
  return inputs[0].name;
}

/** The layer whose output feeds `name` (it must have exactly one input). */
export function layerInputName(model: tfl.LayersModel, name: string): string {
  const layer = model.getLayer(name);
  const inbound = layer.inboundNodes[0]?.inboundLayers ?? [];
  if (inbound.length !== 1) throw new ValidationError(`layer "${name}" has ${inbound.length} inputs; fine-tuning must start at a layer with one input`);
  return inbound[0].name;
}
