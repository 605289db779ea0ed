using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Builds ONNX graphs in code: tests' small models, rewrites that emit new nodes, students for distillation.
/// Names are made unique with a counter so repeated helpers never collide.
/// </summary>
public sealed class GraphBuilder
{
    readonly ModelProto model;
    int counter;

    public GraphBuilder(string name = "graph", int opset = 17, long irVersion = 8)
    {
        model = new ModelProto { IrVersion = irVersion, ProducerName = "ModelCompression", ProducerVersion = EngineInfo.Version, Graph = new GraphProto { Name = name } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
    }

    public GraphProto Graph => model.Graph;

    public string Unique(string prefix) => $"{prefix}_{counter++}";

    /// <summary>Adds a graph input; dims are numbers or symbolic names (strings).</summary>
    public GraphBuilder Input(string name, DT type, params object[] dims)
    {
        model.Graph.Input.Add(Value(name, type, dims));
        return this;
    }

    public GraphBuilder Output(string name, DT type, params object[] dims)
    {
        model.Graph.Output.Add(Value(name, type, dims));
        return this;
    }

    public string Initializer(string name, long[] dims, ReadOnlySpan<float> values)
    {
        model.Graph.Initializer.Add(TensorData.FromFloat(name, dims, values));
        return name;
    }

    public string InitializerInt64(string name, long[] dims, ReadOnlySpan<long> values)
    {
        model.Graph.Initializer.Add(TensorData.FromInt64(name, dims, values));
        return name;
    }

    /// <summary>Adds a node and returns its first output's name (outputs are named after the node unless given).</summary>
    public string Node(string opType, string[] inputs, string[]? outputs = null, string? name = null, string domain = "", params AttributeProto[] attributes)
    {
        name ??= Unique(opType);
        var node = new NodeProto { OpType = opType, Name = name, Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs ?? [name + "_out"]);
        node.Attribute.AddRange(attributes);
        model.Graph.Node.Add(node);
        return node.Output[0];
    }

    public static AttributeProto Attr(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
    public static AttributeProto Attr(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };
    public static AttributeProto Attr(string name, string value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) };
    public static AttributeProto Attr(string name, long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    public static ValueInfoProto Value(string name, DT type, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d is string s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d, System.Globalization.CultureInfo.InvariantCulture) });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    public ModelProto Build() => model;

    public OnnxModel BuildModel(string? name = null) => new(model, name, []);
}
