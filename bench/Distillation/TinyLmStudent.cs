using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

/// <summary>
/// The peer recipe's student for tiny_lm.onnx, built here for the bench only: in every block, half the attention heads
/// (score: L1 norm of the head's Q, K and V weight columns) and half the FFN neurons (score: L1 norm of the neuron's
/// column of the up projection, as <c>Invoke-ModelPruning -Structured</c> scores channels) with the lowest scores are
/// removed, with the head count in the attention Reshape constants. It knows tiny_lm's node names (PyTorch's export of
/// its blocks); structured head pruning for any model belongs to Invoke-ModelPruning (issue 11, items 1-4), and the
/// bench should use it once it lands. bench/Distillation/torch_lm_distill.py prunes the same way in PyTorch and checks
/// that it keeps the same heads and neurons.
/// </summary>
static class TinyLmStudent
{
    public sealed record Kept(int[][] Heads, int[][] Neurons);

    public static (OnnxModel Student, Kept Kept) Build(OnnxModel teacher, double rate)
    {
        var g = teacher.Proto.Graph;
        var byName = g.Node.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var inits = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        int blocks = 0;
        while (byName.ContainsKey($"/blocks.{blocks}/q/MatMul")) blocks++;
        if (blocks == 0) throw new InvalidOperationException("Not tiny_lm: no /blocks.0/q/MatMul node.");
        string Weight(string node) => byName[node].Input[1];
        string Bias(string node) => byName[node].Input.First(inits.ContainsKey);
        float[] Values(string name) => TensorData.ToFloat(inits[name]);
        long[] Dims(string name) => inits[name].Dims.ToArray();

        var heads = new int[blocks][]; var neurons = new int[blocks][];
        var replace = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        var rewires = new List<(string Node, int Input, TensorProto Value)>();
        for (int b = 0; b < blocks; b++)
        {
            string p = $"/blocks.{b}/";
            int width = (int)Dims(Weight(p + "q/MatMul"))[1], model = (int)Dims(Weight(p + "q/MatMul"))[0];
            // the head count is the constant in the Concat that shapes q into [batch, seq, heads, head_dim]
            var headsConst = byName.Values.First(n => n.OpType == "Constant" && n.Output[0] == byName[p + "Concat"].Input[2]);
            int headCount = (int)TensorData.ToInt64(headsConst.Attribute[0].T)[0], headDim = width / headCount;
            var score = new double[headCount];
            foreach (var proj in new[] { "q", "k", "v" })
            {
                var w = Values(Weight(p + proj + "/MatMul"));
                for (int i = 0; i < model; i++)
                    for (int c = 0; c < width; c++) score[c / headDim] += Math.Abs(w[i * width + c]);
            }
            int keepHeads = (int)Math.Round(headCount * (1 - rate), MidpointRounding.AwayFromZero);
            heads[b] = Enumerable.Range(0, headCount).OrderByDescending(h => score[h]).ThenBy(h => h).Take(keepHeads).Order().ToArray();
            var cols = heads[b].SelectMany(h => Enumerable.Range(h * headDim, headDim)).ToArray();
            foreach (var proj in new[] { "q", "k", "v" })
            {
                replace[Weight(p + proj + "/MatMul")] = Columns(Weight(p + proj + "/MatMul"), Values(Weight(p + proj + "/MatMul")), model, width, cols);
                replace[Bias(p + proj + "/Add")] = TensorData.FromFloat(Bias(p + proj + "/Add"), [cols.Length], cols.Select(c => Values(Bias(p + proj + "/Add"))[c]).ToArray());
            }
            replace[Weight(p + "o/MatMul")] = Rows(Weight(p + "o/MatMul"), Values(Weight(p + "o/MatMul")), (int)Dims(Weight(p + "o/MatMul"))[1], cols);
            foreach (var concat in new[] { "Concat", "Concat_1", "Concat_2" })
                rewires.Add((p + concat, 2, TensorData.FromInt64($"{p}{concat}/heads_kept", [1], [keepHeads])));
            rewires.Add((p + "Concat_3", 2, TensorData.FromInt64($"{p}Concat_3/attention_width", [1], [cols.Length])));

            var up = Values(Weight(p + "up/MatMul"));
            int ffn = (int)Dims(Weight(p + "up/MatMul"))[1];
            var ns = new double[ffn];
            for (int i = 0; i < model; i++)
                for (int j = 0; j < ffn; j++) ns[j] += Math.Abs(up[i * ffn + j]);
            int keepNeurons = (int)Math.Round(ffn * (1 - rate), MidpointRounding.AwayFromZero);
            neurons[b] = Enumerable.Range(0, ffn).OrderByDescending(j => ns[j]).ThenBy(j => j).Take(keepNeurons).Order().ToArray();
            replace[Weight(p + "up/MatMul")] = Columns(Weight(p + "up/MatMul"), up, model, ffn, neurons[b]);
            replace[Bias(p + "up/Add")] = TensorData.FromFloat(Bias(p + "up/Add"), [keepNeurons], neurons[b].Select(j => Values(Bias(p + "up/Add"))[j]).ToArray());
            replace[Weight(p + "down/MatMul")] = Rows(Weight(p + "down/MatMul"), Values(Weight(p + "down/MatMul")), (int)Dims(Weight(p + "down/MatMul"))[1], neurons[b]);
        }
        var student = teacher.Derive("Pruning", new Dictionary<string, string> { ["Method"] = "bench: heads and FFN neurons by weight norm", ["Rate"] = rate.ToString(System.Globalization.CultureInfo.InvariantCulture) }, proto =>
        {
            var graph = proto.Graph;
            for (int i = 0; i < graph.Initializer.Count; i++)
                if (replace.TryGetValue(graph.Initializer[i].Name, out var t)) graph.Initializer[i] = t;
            foreach (var (node, input, value) in rewires)
            {
                graph.Initializer.Add(value);
                graph.Node.Single(n => n.Name == node).Input[input] = value.Name;
            }
            // the head-count constants the Concats read before
            var read = graph.Node.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
            foreach (var c in graph.Node.Where(n => n.OpType == "Constant" && !read.Contains(n.Output[0])).ToList()) graph.Node.Remove(c);
            return null;
        });
        return (student, new Kept(heads, neurons));
    }

    static TensorProto Columns(string name, float[] w, int rows, int cols, int[] keep)
    {
        var r = new float[rows * keep.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < keep.Length; j++) r[i * keep.Length + j] = w[i * cols + keep[j]];
        return TensorData.FromFloat(name, [rows, keep.Length], r);
    }

    static TensorProto Rows(string name, float[] w, int cols, int[] keep)
    {
        var r = new float[keep.Length * cols];
        for (int j = 0; j < keep.Length; j++) Array.Copy(w, keep[j] * cols, r, j * cols, cols);
        return TensorData.FromFloat(name, [keep.Length, cols], r);
    }
}
