namespace Optimum.Onnx;

/// <summary>Element types, numbered as ONNX's <c>TensorProto.DataType</c>.</summary>
public enum DType
{
    Undefined = 0,
    Float = 1,
    UInt8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    BFloat16 = 16,
}

/// <summary>Helpers over <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>True for the types gradients flow through.</summary>
    public static bool IsFloating(this DType t) => t is DType.Float or DType.Double or DType.Float16 or DType.BFloat16;

    /// <summary>Bytes per element.</summary>
    public static int Size(this DType t) => t switch
    {
        DType.Float or DType.Int32 => 4,
        DType.Double or DType.Int64 => 8,
        DType.Float16 or DType.BFloat16 => 2,
        DType.UInt8 or DType.Int8 or DType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "Element type has no fixed size."),
    };

    /// <summary>Lower-case ONNX-style name, for messages.</summary>
    public static string Name(this DType t) => t.ToString().ToLowerInvariant();
}
