using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Before planning, the shape arithmetic exporters emit (Shape -> Gather -> Div -> Concat -> Reshape) is made
/// explicit: values computed from shapes that are the same at two probe sizes (the hidden size read back with Shape,
/// head_dim computed from it) become constants, and a Reshape target computed at run time becomes a constant with 0
/// (copy the input's dimension) and -1 (infer) for the sizes that vary, when that describes it at both sizes. Then the
/// channel count is no longer read at run time and the rewrite can edit head counts and widths as numbers.
/// </summary>
internal static class ShapeFolding
{
    /// <summary>Folds the graph in place; returns how many values and targets became constants.</summary>
    public static int Fold(GraphProto graph, ShapeProbe a, ShapeProbe b)
    {
        var index = new GraphIndex(graph, inputInitializersAreConstant: true);
        var shapeOnly = ShapeOnly(index);
        int folded = 0;
        var replace = new Dictionary<string, string>(StringComparer.Ordinal);
        bool Static(string t) => shapeOnly.Contains(t) && a.Values.TryGetValue(t, out var x) && b.Values.TryGetValue(t, out var y) && x.AsSpan().SequenceEqual(y)
            && a.Shape(t) is { } sa && b.Shape(t) is { } sb && sa.AsSpan().SequenceEqual(sb);
        foreach (var node in graph.Node)
            foreach (var o in node.Output)
            {
                if (o.Length == 0 || !Static(o) || index.GraphOutputs.Contains(o) || index.SubgraphReferences.Contains(o)) continue;
                // Only the outermost static values: those read by something that is not itself static.
                if (index.ConsumersOf(o).All(c => c.Node.Output.All(Static))) continue;
                replace[o] = AddConstant(index, graph, o + ".static", a.ValueTypes[o], a.Shape(o)!, a.Values[o]);
                folded++;
            }
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Input.Count; i++)
                if (replace.TryGetValue(node.Input[i], out var c)) node.Input[i] = c;

        // Reshape targets still computed: constants with 0 and -1 where sizes vary, when that holds at both probe sizes.
        foreach (var node in graph.Node)
        {
            if (node.OpType != "Reshape" || node.Domain is not ("" or "ai.onnx") || node.Input.Count < 2 || index.Constant(node.Input[1]) is not null) continue;
            if (GraphIndex.IntAttr(node, "allowzero", 0) != 0) continue;
            string target = node.Input[1];
            if (!a.Values.TryGetValue(target, out var va) || !b.Values.TryGetValue(target, out var vb) || va.Length != vb.Length) continue;
            if (a.Shape(node.Input[0]) is not { } ia || b.Shape(node.Input[0]) is not { } ib || a.Shape(node.Output[0]) is not { } oa || b.Shape(node.Output[0]) is not { } ob) continue;
            if (oa.Length != va.Length) continue;
            var canonical = new long[va.Length];
            int inferred = 0;
            for (int i = 0; i < va.Length && inferred < 2; i++)
            {
                if (oa[i] == ob[i]) canonical[i] = oa[i];
                else if (i < ia.Length && ia[i] == oa[i] && ib[i] == ob[i]) canonical[i] = 0;
                else { canonical[i] = -1; inferred++; }
            }
            if (inferred > 1) continue;
            // A static size of 0 would mean "copy": keep such targets computed.
            if (canonical.Where((v, i) => v == 0 && oa[i] == ob[i]).Any()) continue;
            node.Input[1] = AddConstant(index, graph, ChannelWalk.Label(node) + ".target", DT.Int64, [canonical.Length], canonical.Select(v => (double)v).ToArray());
            folded++;
        }
        folded += FoldExpandShapes(index, graph, a, b);
        if (folded > 0) GraphRewriter.RemoveDead(graph);
        return folded;
    }

    /// <summary>
    /// Expand shapes still computed (grouped-query attention's repeat of key/value heads, with the batch and sequence
    /// read at run time): constants with 1 (keep the input's size) for the sizes that vary, when the input has that
    /// size at both probe sizes, and the fixed sizes (heads, copies, head size) as literals the rewrite can edit.
    /// </summary>
    static int FoldExpandShapes(GraphIndex index, GraphProto graph, ShapeProbe a, ShapeProbe b)
    {
        int folded = 0;
        foreach (var node in graph.Node)
        {
            if (node.OpType != "Expand" || node.Domain is not ("" or "ai.onnx") || node.Input.Count < 2 || index.Constant(node.Input[1]) is not null) continue;
            if (!a.Values.TryGetValue(node.Input[1], out var va) || !b.Values.TryGetValue(node.Input[1], out var vb) || va.Length != vb.Length) continue;
            if (a.Shape(node.Input[0]) is not { } ia || b.Shape(node.Input[0]) is not { } ib || a.Shape(node.Output[0]) is not { } oa || b.Shape(node.Output[0]) is not { } ob) continue;
            if (oa.Length != ob.Length || ia.Length != ib.Length || va.Length > oa.Length) continue;
            var canonical = new long[va.Length];
            bool ok = true;
            for (int i = 0; i < va.Length && ok; i++)
            {
                int o = i + oa.Length - va.Length, x = o - (oa.Length - ia.Length);
                if (oa[o] == ob[o] && va[i] == vb[i]) canonical[i] = (long)va[i];
                else if (x >= 0 && ia[x] == oa[o] && ib[x] == ob[o]) canonical[i] = 1;
                else ok = false;
            }
            if (!ok) continue;
            node.Input[1] = AddConstant(index, graph, ChannelWalk.Label(node) + ".shape", DT.Int64, [canonical.Length], canonical.Select(v => (double)v).ToArray());
            folded++;
        }
        return folded;
    }

    /// <summary>
    /// Tensors computed only from shapes and constants (Shape, Size, and any standard op whose inputs are such tensors or
    /// constants); random ops excluded.
    /// </summary>
    public static HashSet<string> ShapeOnly(GraphIndex index)
    {
        var result = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in index.Graph.Node)
        {
            if (node.Domain is not ("" or "ai.onnx")) continue;
            bool source = node.OpType is "Shape" or "Size";
            bool derived = !node.OpType.StartsWith("Random", StringComparison.Ordinal) && node.Attribute.All(at => at.G is null && at.Graphs.Count == 0)
                && node.Input.Any(i => result.Contains(i))
                && node.Input.All(i => i.Length == 0 || result.Contains(i) || index.Constant(i) is not null);
            if (source || derived) foreach (var o in node.Output) if (o.Length > 0) result.Add(o);
        }
        return result;
    }

    static string AddConstant(GraphIndex index, GraphProto graph, string hint, DT type, long[] dims, double[] values)
    {
        string name = GraphRewriter.Unique(index, hint);
        var t = type switch
        {
            DT.Int64 => TensorData.FromInt64(name, dims, values.Select(v => (long)v).ToArray()),
            DT.Float => TensorData.FromFloat(name, dims, values.Select(v => (float)v).ToArray()),
            DT.Int32 => TensorData.FromRaw(name, DT.Int32, dims, values.SelectMany(v => BitConverter.GetBytes((int)v)).ToArray()),
            _ => TensorData.FromRaw(name, DT.Double, dims, values.SelectMany(v => BitConverter.GetBytes(v)).ToArray()),
        };
        graph.Initializer.Add(t);
        index.Initializers[name] = t;
        return name;
    }
}
