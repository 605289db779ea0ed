using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// Token windows for a student: its token input (the only input, or the tokens of its <see cref="DecoderContract"/>)
/// and, for a language model with a contract, the inputs the contract derives: a mask of ones, positions 0..n-1 and
/// an empty key/value cache, so that a decoder-with-past export trains on windows as its plain export does.
/// </summary>
internal sealed class WindowData
{
    readonly TokenStream tokens;
    readonly int length, batch;
    readonly string input;
    readonly DecoderContract? contract;
    readonly IReadOnlyList<ValueSignature> inputs;

    WindowData(TokenStream tokens, int length, int batch, string input, DecoderContract? contract, IReadOnlyList<ValueSignature> inputs)
    {
        this.tokens = tokens; this.length = length; this.batch = batch; this.input = input; this.contract = contract; this.inputs = inputs;
    }

    /// <summary>The windows for <paramref name="student"/>, or an error when it has no int64 [batch, seq] token input.</summary>
    public static WindowData For(OnnxModel student, TokenStream tokens, int length, int batch)
    {
        var inputs = InputSynthesizer.Inputs(student);
        var contract = DecoderContract.Of(student);
        var tokenInput = TokenInput(contract, inputs);
        if (tokenInput is null || (DT)tokenInput.ElementTypeCode != DT.Int64)
            throw new EngineException("TokenDataInputMismatch", EngineErrorKind.InvalidData,
                $"Token windows feed a student with one int64 input [batch, seq] (or a language model's input_ids, with the inputs it derives); '{student.Name}' has {string.Join(", ", inputs)}.");
        var data = new WindowData(tokens, length, batch, tokenInput.Name, contract, inputs);
        data.Derived(1);   // a derived input the training engine cannot take is refused before anything runs
        return data;
    }

    /// <summary>The input token windows feed: a language model's token ids, or a model's only input when it is [batch, seq].</summary>
    public static ValueSignature? TokenInput(OnnxModel student) => TokenInput(DecoderContract.Of(student), InputSynthesizer.Inputs(student));

    static ValueSignature? TokenInput(DecoderContract? contract, IReadOnlyList<ValueSignature> inputs) =>
        contract?.Tokens ?? (inputs is [{ Shape.Count: 2 } only] ? only : null);

    /// <summary>One window from the start of the stream, with what the student derives, to probe the models' shapes.</summary>
    public Dictionary<string, Tensor> Probe()
    {
        var x = new long[length];
        tokens.CopyWindow(0, x);
        return new Dictionary<string, Tensor>(Derived(1), StringComparer.Ordinal) { [input] = Tensor.Int64([1, length], x) };
    }

    /// <summary>Batches drawn with <paramref name="rng"/>, once the teacher and the output's shape per window are known.</summary>
    public IBatchSource Create(TeacherModel teacher, int[] rowShape, Random rng)
    {
        if (tokens.MinId < 0 || tokens.MaxId >= rowShape[^1])
            throw new EngineException("TokenIdOutOfRange", EngineErrorKind.InvalidData,
                $"Token data '{tokens.Source}' holds ids {tokens.MinId}..{tokens.MaxId}, but the models' vocabulary (last output dimension) is {rowShape[^1]} (ids 0..{rowShape[^1] - 1}).") { Target = tokens.Source };
        return new WindowBatches(new TokenWindows(tokens, length, batch, rng), input, Derived(batch), teacher, rowShape);
    }

    /// <summary>The student's derived inputs for <paramref name="rows"/> windows, as the training engine takes them.</summary>
    Dictionary<string, Tensor> Derived(int rows)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (contract is null) return result;
        foreach (var (name, a) in contract.Derive(rows, length))
        {
            int[] shape = a.Shape.Select(d => checked((int)d)).ToArray();
            result[name] = a.Data switch
            {
                float[] f => Tensor.Float(shape, f),
                long[] or int[] or bool[] => Tensor.Int64(shape, a.AsInt64()),
                _ => throw new EngineException("DistillationInputTypeUnsupported", EngineErrorKind.NotImplemented,
                    $"Student input '{name}' is {inputs.First(i => i.Name == name).ElementType}; the training engine takes float and int64 inputs."),
            };
        }
        return result;
    }
}

/// <summary>
/// Windows of a token stream drawn by index from the one mapped array: each batch takes <c>batch</c> windows at random
/// starts i (seeded), x = tokens[i, i+L) and the next-token labels y = tokens[i+1, i+L+1), copied into buffers that
/// are reused for every batch.
/// </summary>
internal sealed class TokenWindows
{
    readonly TokenStream tokens;
    readonly Random rng;

    public TokenWindows(TokenStream tokens, int length, int batch, Random rng)
    {
        this.tokens = tokens; this.rng = rng; Length = length; Batch = batch;
        Ids = new long[batch * length];
        Labels = new long[batch * length];
    }

    public int Length { get; }
    public int Batch { get; }
    /// <summary>The current batch's windows, [batch, length] row after row.</summary>
    public long[] Ids { get; }
    /// <summary>The next token at each position of <see cref="Ids"/>.</summary>
    public long[] Labels { get; }
    /// <summary>Where the current batch's windows start in the stream.</summary>
    public long[] Starts { get; private set; } = [];

    /// <summary>Windows in the stream: as many as it has tokens, <see cref="Length"/> each, in batches.</summary>
    public long BatchesPerEpoch => Math.Max(1, (tokens.Length - 1 + (long)Batch * Length - 1) / ((long)Batch * Length));

    public void Next()
    {
        if (Starts.Length != Batch) Starts = new long[Batch];
        for (int r = 0; r < Batch; r++)
        {
            long start = Starts[r] = rng.NextInt64(0, tokens.Length - Length);   // start + length + 1 <= tokens
            tokens.CopyWindow(start, Ids.AsSpan(r * Length, Length));
            tokens.CopyWindow(start + 1, Labels.AsSpan(r * Length, Length));
        }
    }
}

/// <summary>
/// Batches of token windows (<see cref="TokenWindows"/>), with the teacher run on each. An epoch is as many windows as
/// the stream has tokens. A student with a decoder contract also gets the inputs it derives (the same every step).
/// </summary>
internal sealed class WindowBatches : IBatchSource
{
    readonly TokenWindows windows;
    readonly string input;
    readonly Dictionary<string, Tensor> derived;
    readonly TeacherModel teacher;
    readonly int[] rowShape;
    readonly float[] teacherValues;
    readonly int[] teacherStart, labelStart;

    public WindowBatches(TokenWindows windows, string input, Dictionary<string, Tensor> derived, TeacherModel teacher, int[] rowShape)
    {
        this.windows = windows; this.input = input; this.derived = derived; this.teacher = teacher; this.rowShape = rowShape;
        int rowSize = Tensor.Count(rowShape);
        teacherValues = new float[(long)windows.Batch * rowSize];
        teacherStart = Enumerable.Range(0, windows.Batch).Select(r => r * rowSize).ToArray();
        labelStart = Enumerable.Range(0, windows.Batch).Select(r => r * windows.Length).ToArray();
    }

    public long StepsPerEpoch => windows.BatchesPerEpoch;

    public void StartEpoch() { }

    public StepBatch Next(CancellationToken cancellation)
    {
        windows.Next();
        var inputs = new Dictionary<string, Tensor>(derived, StringComparer.Ordinal) { [input] = Tensor.Int64([windows.Batch, windows.Length], windows.Ids) };
        teacher.Run(inputs, windows.Batch, rowShape, teacherValues, cancellation);
        return new StepBatch { Inputs = inputs, Rows = windows.Batch, Targets = new Targets(teacherValues, teacherStart, windows.Labels, labelStart) };
    }
}
