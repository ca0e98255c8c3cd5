using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Optimum.Onnx;

/// <summary>Constant tensor contents: element type, static dims and little-endian raw bytes.</summary>
public sealed class TensorData
{
    public TensorData(DType type, long[] dims, byte[] raw)
    {
        long n = dims.Aggregate(1L, (a, d) => a * d);
        if (raw.LongLength != n * type.Size())
            throw new ArgumentException($"Tensor of type {type.Name()} and dims [{string.Join(", ", dims)}] needs {n * type.Size()} bytes, got {raw.LongLength}.");
        Type = type;
        Dims = dims;
        Raw = raw;
    }

    public DType Type { get; }
    public long[] Dims { get; }
    public byte[] Raw { get; }
    public long Count => Dims.Aggregate(1L, (a, d) => a * d);

    public static TensorData FromFloats(float[] values, params long[] dims) => new(DType.Float, dims, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
    public static TensorData FromDoubles(double[] values, params long[] dims) => new(DType.Double, dims, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
    public static TensorData FromInt64s(long[] values, params long[] dims) => new(DType.Int64, dims, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
    public static TensorData FromBools(bool[] values, params long[] dims) => new(DType.Bool, dims, values.Select(v => v ? (byte)1 : (byte)0).ToArray());

    /// <summary>A tensor of <paramref name="type"/> whose elements are <paramref name="values"/> converted.</summary>
    public static TensorData FromNumbers(DType type, double[] values, params long[] dims) => type switch
    {
        DType.Float => FromFloats(values.Select(v => (float)v).ToArray(), dims),
        DType.Double => FromDoubles(values, dims),
        DType.Int64 => FromInt64s(values.Select(v => (long)v).ToArray(), dims),
        DType.Int32 => new(type, dims, MemoryMarshal.AsBytes(values.Select(v => (int)v).ToArray().AsSpan()).ToArray()),
        DType.Bool => FromBools(values.Select(v => v != 0).ToArray(), dims),
        DType.Float16 => new(type, dims, MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray()),
        _ => throw new NotSupportedException($"Constants of type {type.Name()} are not supported."),
    };

    /// <summary>The elements converted to double (for messages, folding and tests).</summary>
    public double[] ToDoubles()
    {
        var n = (int)Count;
        var r = new double[n];
        var s = Raw.AsSpan();
        for (int i = 0; i < n; i++)
        {
            r[i] = Type switch
            {
                DType.Float => BinaryPrimitives.ReadSingleLittleEndian(s[(4 * i)..]),
                DType.Double => BinaryPrimitives.ReadDoubleLittleEndian(s[(8 * i)..]),
                DType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(s[(8 * i)..]),
                DType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(s[(4 * i)..]),
                DType.Bool or DType.UInt8 => s[i],
                DType.Int8 => (sbyte)s[i],
                DType.Float16 => (double)BinaryPrimitives.ReadHalfLittleEndian(s[(2 * i)..]),
                _ => throw new NotSupportedException($"Reading {Type.Name()} constants is not supported."),
            };
        }
        return r;
    }

    /// <summary>The elements of an integer tensor.</summary>
    public long[] ToInt64s() => Type is DType.Int64 or DType.Int32 or DType.Int8 or DType.UInt8 or DType.Bool
        ? ToDoubles().Select(d => (long)d).ToArray()
        : throw new InvalidOperationException($"Tensor of type {Type.Name()} is not an integer tensor.");
}
