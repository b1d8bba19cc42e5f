"""Cut data/variants_chr20_slice.fa.gz from GRCh37 chr20: the real contig 20 at its full length, with the
real bases kept within FLANK bp of every indel of chr20_indels_1000g.vcf.gz and N elsewhere, so the
VCF coordinates stay valid while the file stays small.

usage: python data/variants_make_slice.py ../shared/data/genomes/human_chr20_GRCh37.fa.gz \
           data/variants_chr20_indels_1000g.vcf.gz data/variants_chr20_slice.fa
then bgzip it and build .fai/.gzi: python -c "import pysam; pysam.tabix_compress('data/variants_chr20_slice.fa', 'data/variants_chr20_slice.fa.gz'); pysam.faidx('data/variants_chr20_slice.fa.gz')"
"""

import gzip
import sys

import pyfaidx
import pysam

src = sys.argv[1]; vcf = sys.argv[2]; out = sys.argv[3]
FLANK = 1500
fa = pyfaidx.Fasta(src)
seq = fa["20"]
n = len(seq)
keep = []
for rec in pysam.VariantFile(gzip.open(vcf)):
    keep.append((max(0, rec.start - FLANK), min(n, rec.stop + FLANK)))
keep.sort()
merged = []
for s, e in keep:
    if merged and s <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], e)
    else:
        merged.append([s, e])
buf = bytearray(b"N" * n)
for s, e in merged:
    buf[s:e] = seq[s:e].seq.encode()
with open(out, "w") as fh:
    fh.write(">20 GRCh37 chromosome 20, N outside +-1500 bp of each chr20_indels_1000g indel\n")
    for i in range(0, n, 60):
        fh.write(buf[i:i + 60].decode() + "\n")
print(len(merged), sum(e - s for s, e in merged))
