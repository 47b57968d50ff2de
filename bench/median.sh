# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Sourced by the bench scripts: how a row's alternated runs become the figure
# it prints. The project reports the median of the runs with their spread
# (min-max) and computes ratios from the medians, never the best of N: on a
# shared host the best run is one lucky moment of one tool, while the median
# moves only when most of the runs move, and the spread shows how far to
# trust it.

# median_spread FMT "V1 V2 ...": prints "MEDIAN MIN MAX", each with printf
# FMT (an even count takes the mean of the two middle runs), or "- - -"
# when there are no runs.
median_spread() {
	tr ' ' '\n' <<<"$2" | grep . | sort -g | awk -v f="$1" '
		{ v[NR] = $1 }
		END {
			if (!NR) {
				print "- - -"
				exit
			}
			m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf f " " f " " f "\n", m, v[1], v[NR]
		}'
}

# median FMT "V1 V2 ...": the median alone (what ratios are computed from).
median() { median_spread "$1" "$2" | cut -d' ' -f1; }

# median_cell FMT "V1 V2 ...": "MEDIAN (MIN-MAX)", a table cell.
median_cell() {
	median_spread "$1" "$2" | awk '$1 == "-" { print "-"; next }
		{ printf "%s (%s-%s)\n", $1, $2, $3 }'
}

# ratio A B: A / B to two decimals, "-" when either is missing or B is 0.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0)
			print "-"
		else
			printf "%.2f\n", a / b
	}'
}
